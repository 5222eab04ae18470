"""The synthetic world's vocabulary: interests (topics), their keywords in four languages, and
the words people put around them.

Each topic has exactly :data:`CONCEPTS_PER_TOPIC` *concepts* (the first is the topic's head
word). A concept is written ``"form|synonym|..."``: query and pin text pick one surface form at
random, so a query saying "couch" must learn to find a pin saying "sofa". The French, German and
Spanish strings list the same concepts in the same order, so a translated query means the same
thing as its English twin. Everything here is fixed data; the generator draws from it with the
world's seed.

Hand-written on purpose: a real vocabulary with real synonyms and translations is what makes
the paper's effects (synonyms, multilingual queries, text-less pins) measurable, and no
maintained package ships such a small, licence-free multilingual interest lexicon.
"""
from __future__ import annotations

from dataclasses import dataclass

LANGS = ("en", "fr", "de", "es")
CONCEPTS_PER_TOPIC = 6


@dataclass(frozen=True)
class Topic:
    """One interest: its name and its concepts per language (``;`` between concepts)."""

    name: str
    en: str
    fr: str
    de: str
    es: str

    def concepts(self, lang: str) -> list[list[str]]:
        """The concepts in ``lang``, each a list of surface forms (synonyms)."""
        return [c.split("|") for c in getattr(self, lang).split(";")]


TOPICS: tuple[Topic, ...] = (
    Topic("kitchen",
          "kitchen;knife|blade;pantry|larder;countertop|worktop;utensils|cookware;cabinets|cupboards",
          "cuisine;couteau;garde-manger;plan de travail;ustensiles;placards",
          "küche;messer;speisekammer;arbeitsplatte;küchenutensilien;schränke",
          "cocina;cuchillo;despensa;encimera;utensilios;armarios"),
    Topic("wedding",
          "wedding|marriage;bride|bridal;bouquet;veil;engagement ring|wedding ring;reception",
          "mariage;mariée;bouquet;voile;bague de fiançailles;réception",
          "hochzeit;braut;brautstrauß;schleier;verlobungsring;hochzeitsfeier",
          "boda;novia;ramo;velo;anillo de compromiso;banquete"),
    Topic("hiking",
          "hiking|trekking;trail|path;backpack|rucksack;hiking boots;summit|peak;tent",
          "randonnée;sentier;sac à dos;chaussures de marche;sommet;tente",
          "wandern;wanderweg;rucksack;wanderschuhe;gipfel;zelt",
          "senderismo;sendero;mochila;botas de montaña;cumbre;tienda de campaña"),
    Topic("baking",
          "baking;cake|gateau;bread|loaf;cookies|biscuits;sourdough;cupcakes|muffins",
          "pâtisserie;gâteau;pain;biscuits;levain;cupcakes",
          "backen;kuchen;brot;kekse;sauerteig;muffins",
          "repostería;pastel|tarta;pan;galletas;masa madre;magdalenas"),
    Topic("garden",
          "garden|yard;flowers|blooms;vegetables|veggies;raised bed;succulents;compost",
          "jardin;fleurs;légumes;potager surélevé;plantes grasses;compost",
          "garten;blumen;gemüse;hochbeet;sukkulenten;kompost",
          "jardín;flores;verduras;bancal elevado;suculentas;abono"),
    Topic("fitness",
          "workout|exercise;gym;yoga;abs|core;dumbbells|weights;stretching",
          "entraînement;salle de sport;yoga;abdos;haltères;étirements",
          "training;fitnessstudio;yoga;bauchmuskeln;hanteln;dehnen",
          "entrenamiento;gimnasio;yoga;abdominales;mancuernas;estiramientos"),
    Topic("travel",
          "travel|vacation;beach;itinerary;passport;hotel|resort;road trip",
          "voyage;plage;itinéraire;passeport;hôtel;road trip",
          "reisen|urlaub;strand;reiseroute;reisepass;hotel;roadtrip",
          "viaje;playa;itinerario;pasaporte;hotel;viaje por carretera"),
    Topic("nails",
          "nail art|manicure;nail polish|varnish;french tips;gel nails;acrylic nails;nail designs",
          "manucure;vernis à ongles;french manucure;ongles gel;ongles acryliques;motifs ongles",
          "maniküre;nagellack;french nails;gelnägel;acrylnägel;nageldesign",
          "manicura;esmalte de uñas;uñas francesas;uñas de gel;uñas acrílicas;diseños de uñas"),
    Topic("hairstyles",
          "hairstyles|hairdos;braids|plaits;bob haircut;curls|curly hair;updo;bangs|fringe",
          "coiffures;tresses;coupe carré;boucles;chignon;frange",
          "frisuren;zöpfe;bob frisur;locken;hochsteckfrisur;pony",
          "peinados;trenzas;corte bob;rizos;recogido;flequillo"),
    Topic("living room",
          "living room|lounge;sofa|couch;coffee table;rug|carpet;throw pillows|cushions;bookshelf",
          "salon;canapé;table basse;tapis;coussins;étagère",
          "wohnzimmer;sofa|couch;couchtisch;teppich;kissen;bücherregal",
          "sala de estar;sofá;mesa de centro;alfombra;cojines;estantería"),
    Topic("bedroom",
          "bedroom;headboard;bedding|duvet;nightstand|bedside table;wardrobe|closet;canopy bed",
          "chambre;tête de lit;linge de lit;table de chevet;armoire;lit à baldaquin",
          "schlafzimmer;kopfteil;bettwäsche;nachttisch;kleiderschrank;himmelbett",
          "dormitorio;cabecero;ropa de cama;mesita de noche;armario ropero;cama con dosel"),
    Topic("bathroom",
          "bathroom;bathtub|tub;shower;vanity|sink;tiles;towels",
          "salle de bain;baignoire;douche;lavabo;carrelage;serviettes",
          "badezimmer;badewanne;dusche;waschbecken;fliesen;handtücher",
          "baño;bañera;ducha;lavamanos;azulejos;toallas"),
    Topic("coffee",
          "coffee;espresso;latte|cappuccino;coffee beans;mug|cup;barista",
          "café;expresso;latte;grains de café;tasse;barista",
          "kaffee;espresso;latte;kaffeebohnen;tasse;barista",
          "café;espresso;café con leche;granos de café;taza;barista"),
    Topic("cocktails",
          "cocktails|mixed drinks;margarita;mojito;gin;whiskey|whisky;bar cart",
          "cocktails;margarita;mojito;gin;whisky;chariot de bar",
          "cocktails;margarita;mojito;gin;whisky;barwagen",
          "cócteles;margarita;mojito;ginebra;whisky;carrito de bar"),
    Topic("dogs",
          "dog|puppy;dog bed;leash|lead;dog treats;grooming;golden retriever",
          "chien|chiot;panier pour chien;laisse;friandises pour chien;toilettage;golden retriever",
          "hund|welpe;hundebett;leine;hundeleckerli;hundepflege;golden retriever",
          "perro|cachorro;cama para perro;correa;premios para perro;peluquería canina;golden retriever"),
    Topic("cats",
          "cat|kitten;cat tree;litter box;cat toys;scratching post;tabby",
          "chat|chaton;arbre à chat;litière;jouets pour chat;griffoir;chat tigré",
          "katze|kätzchen;kratzbaum;katzenklo;katzenspielzeug;kratzpfosten;getigerte katze",
          "gato|gatito;árbol para gatos;arenero;juguetes para gatos;rascador;gato atigrado"),
    Topic("tattoos",
          "tattoo|ink;minimalist tattoo;sleeve tattoo;fine line;flash tattoo;tattoo sketch",
          "tatouage;tatouage minimaliste;tatouage bras;trait fin;flash tatouage;croquis tatouage",
          "tattoo|tätowierung;minimalistisches tattoo;ärmel tattoo;feine linien;flash tattoo;tattoo skizze",
          "tatuaje;tatuaje minimalista;tatuaje de manga;línea fina;tatuaje flash;boceto de tatuaje"),
    Topic("christmas",
          "christmas|xmas;christmas tree;ornaments|baubles;wreath;stockings;advent calendar",
          "noël;sapin de noël;boules de noël;couronne de noël;chaussettes de noël;calendrier de l'avent",
          "weihnachten;weihnachtsbaum|tannenbaum;christbaumkugeln;adventskranz;weihnachtsstrumpf;adventskalender",
          "navidad;árbol de navidad;adornos navideños;corona navideña;calcetines navideños;calendario de adviento"),
    Topic("halloween",
          "halloween;costume;pumpkin|jack o lantern;spooky|scary;witch;haunted house",
          "halloween;déguisement;citrouille;effrayant;sorcière;maison hantée",
          "halloween;kostüm;kürbis;gruselig;hexe;spukhaus",
          "halloween;disfraz;calabaza;terrorífico;bruja;casa embrujada"),
    Topic("nursery",
          "nursery|baby room;crib|cot;baby shower;stroller|pram;onesie;baby mobile",
          "chambre de bébé;berceau;baby shower;poussette;body bébé;mobile bébé",
          "kinderzimmer;babybett;babyparty;kinderwagen;strampler;babymobile",
          "cuarto del bebé;cuna;baby shower;cochecito;body de bebé;móvil de cuna"),
    Topic("cars",
          "cars|vehicles;sports car;classic car|vintage car;wheels|rims;engine;car interior",
          "voitures;voiture de sport;voiture ancienne;jantes;moteur;intérieur voiture",
          "autos;sportwagen;oldtimer;felgen;motor;autoinnenraum",
          "coches;coche deportivo;coche clásico;llantas;motor de coche;interior del coche"),
    Topic("photography",
          "photography;camera;lens;portrait;film camera|analog camera;tripod",
          "photographie;appareil photo;objectif;portrait;argentique;trépied",
          "fotografie;kamera;objektiv;porträt;analogkamera;stativ",
          "fotografía;cámara;objetivo;retrato;cámara analógica;trípode"),
    Topic("knitting",
          "knitting;yarn|wool;sweater|jumper;scarf;crochet;knitting pattern",
          "tricot;laine;pull;écharpe;crochet;modèle de tricot",
          "stricken;wolle|garn;pullover;schal;häkeln;strickmuster",
          "tejer|punto;lana;jersey;bufanda;ganchillo;patrón de punto"),
    Topic("painting",
          "painting;watercolor|watercolour;acrylic paint;canvas;paint brushes;landscape painting",
          "peinture;aquarelle;peinture acrylique;toile;pinceaux;paysage peint",
          "malerei;aquarell;acrylfarbe;leinwand;pinsel;landschaftsmalerei",
          "pintura;acuarela;pintura acrílica;lienzo;pinceles;paisaje pintado"),
    Topic("skincare",
          "skincare|skin care;serum;moisturizer|moisturiser;sunscreen|spf;face mask;cleanser",
          "soin de la peau;sérum;crème hydratante;crème solaire;masque visage;nettoyant",
          "hautpflege;serum;feuchtigkeitscreme;sonnencreme;gesichtsmaske;reinigungsgel",
          "cuidado de la piel;sérum;crema hidratante;protector solar;mascarilla;limpiador facial"),
    Topic("makeup",
          "makeup|make up;eyeshadow;lipstick;foundation;mascara;eyeliner",
          "maquillage;fard à paupières;rouge à lèvres;fond de teint;mascara;eye-liner",
          "make-up;lidschatten;lippenstift;grundierung;wimperntusche;eyeliner",
          "maquillaje;sombra de ojos;pintalabios;base de maquillaje;rímel;delineador"),
    Topic("sneakers",
          "sneakers|trainers;running shoes;high tops;white sneakers;sneaker collection;basketball shoes",
          "baskets;chaussures de course;baskets montantes;baskets blanches;collection de baskets;"
          "chaussures de basket",
          "sneaker|turnschuhe;laufschuhe;high tops;weiße sneaker;sneaker sammlung;basketballschuhe",
          "zapatillas;zapatillas de correr;zapatillas altas;zapatillas blancas;colección de zapatillas;"
          "zapatillas de baloncesto"),
    Topic("dresses",
          "dress|gown;maxi dress;summer dress|sundress;cocktail dress;floral dress;little black dress",
          "robe;robe longue;robe d'été;robe de cocktail;robe fleurie;petite robe noire",
          "kleid;maxikleid;sommerkleid;cocktailkleid;geblümtes kleid;kleines schwarzes",
          "vestido;vestido largo;vestido de verano;vestido de cóctel;vestido de flores;vestidito negro"),
    Topic("jewelry",
          "jewelry|jewellery;necklace;earrings;bracelet;gold ring;pendant",
          "bijoux;collier;boucles d'oreilles;bracelet;bague en or;pendentif",
          "schmuck;halskette;ohrringe;armband;goldring;anhänger",
          "joyería;collar;pendientes|aretes;pulsera;anillo de oro;colgante"),
    Topic("vegan",
          "vegan recipes|plant based;tofu;salad;smoothie bowl;lentils;buddha bowl",
          "recettes véganes;tofu;salade;smoothie bowl;lentilles;buddha bowl",
          "vegane rezepte;tofu;salat;smoothie bowl;linsen;buddha bowl",
          "recetas veganas;tofu;ensalada;smoothie bowl;lentejas;buddha bowl"),
    Topic("bbq",
          "bbq|barbecue|grill;ribs;burgers;brisket|smoked brisket;skewers|kebabs;grilled corn",
          "barbecue;travers de porc;burgers;poitrine fumée;brochettes;maïs grillé",
          "grillen;spareribs;burger;rinderbrust;spieße;gegrillter mais",
          "barbacoa;costillas;hamburguesas;pecho de res;brochetas;maíz asado"),
    Topic("home office",
          "home office|workspace;desk;office chair;monitor;desk organizer;standing desk",
          "bureau à domicile;bureau;chaise de bureau;écran;organisateur de bureau;bureau debout",
          "homeoffice|arbeitszimmer;schreibtisch;bürostuhl;bildschirm;schreibtisch organizer;stehschreibtisch",
          "oficina en casa;escritorio;silla de oficina;monitor;organizador de escritorio;escritorio elevable"),
    Topic("camping",
          "camping;campfire;sleeping bag;camper van|campervan;hammock;lantern",
          "camping;feu de camp;sac de couchage;van aménagé;hamac;lanterne",
          "camping;lagerfeuer;schlafsack;wohnmobil|camper;hängematte;laterne",
          "acampada;fogata;saco de dormir;furgoneta camper;hamaca;farol"),
    Topic("birthday",
          "birthday party;birthday cake;balloons;party decorations;party favors;candles",
          "fête d'anniversaire;gâteau d'anniversaire;ballons;décoration de fête;cadeaux invités;bougies",
          "geburtstagsparty;geburtstagstorte;luftballons;partydeko;gastgeschenke;kerzen",
          "fiesta de cumpleaños;tarta de cumpleaños;globos;decoración de fiesta;recuerdos de fiesta;velas"),
    Topic("aquarium",
          "aquarium|fish tank;tropical fish;aquascape;coral reef;goldfish;aquarium plants",
          "aquarium;poissons tropicaux;aquascaping;récif corallien;poisson rouge;plantes d'aquarium",
          "aquarium;tropische fische;aquascaping;korallenriff;goldfisch;aquarienpflanzen",
          "acuario|pecera;peces tropicales;acuascaping;arrecife de coral;pez dorado;plantas de acuario"),
    Topic("woodworking",
          "woodworking|carpentry;workbench;wood carving;chisel;cutting board;dovetail joint",
          "menuiserie;établi;sculpture sur bois;ciseau à bois;planche à découper;queue d'aronde",
          "holzarbeiten|tischlern;werkbank;holzschnitzen;stechbeitel;schneidebrett;schwalbenschwanz",
          "carpintería;banco de trabajo;tallado en madera;formón;tabla de cortar;cola de milano"),
    Topic("books",
          "books|reading;reading nook;novel;book club;library;bookmarks",
          "livres|lecture;coin lecture;roman;club de lecture;bibliothèque;marque-pages",
          "bücher|lesen;leseecke;roman;buchclub;bibliothek;lesezeichen",
          "libros|lectura;rincón de lectura;novela;club de lectura;biblioteca;marcapáginas"),
    Topic("cycling",
          "cycling|biking;road bike;mountain bike|mtb;bike helmet;bike route;cycling jersey",
          "cyclisme|vélo;vélo de route;vtt;casque de vélo;itinéraire vélo;maillot de cyclisme",
          "radfahren;rennrad;mountainbike;fahrradhelm;radweg;radtrikot",
          "ciclismo;bicicleta de carretera;bicicleta de montaña;casco de bici;ruta en bici;maillot ciclista"),
    Topic("pasta",
          "pasta;spaghetti;lasagna|lasagne;pesto;ravioli;carbonara",
          "pâtes;spaghetti;lasagnes;pesto;raviolis;carbonara",
          "nudeln|pasta;spaghetti;lasagne;pesto;ravioli;carbonara",
          "pasta;espaguetis;lasaña;pesto;raviolis;carbonara"),
    Topic("tiny house",
          "tiny house;log cabin|cabin;loft;a-frame;off grid;treehouse",
          "mini maison;chalet|cabane;mezzanine;maison a-frame;autonome;cabane dans les arbres",
          "tiny house;blockhütte|hütte;hochbett;a-frame haus;autark;baumhaus",
          "casa pequeña;cabaña;altillo;casa a-frame;autosuficiente;casa del árbol"),
)

#: Words around a topic in queries and titles ("easy", "diy", "ideas"), per language, same slots.
MODIFIERS = {
    "en": "ideas;diy;easy;aesthetic;inspiration|inspo;cheap;best;small;modern;vintage;cute;for beginners;"
          "2026;simple",
    "fr": "idées;diy|fait maison;facile;esthétique;inspiration;pas cher;meilleur;petit;moderne;vintage;"
          "mignon;pour débutants;2026;simple",
    "de": "ideen;diy|selbermachen;einfach;ästhetisch;inspiration;günstig;beste;klein;modern;vintage;süß;"
          "für anfänger;2026;schlicht",
    "es": "ideas;diy|manualidades;fácil;estética;inspiración;barato;mejor;pequeño;moderno;vintage;bonito;"
          "para principiantes;2026;sencillo",
}
#: Chatty filler in pin and product descriptions, per language.
FILLERS = {
    "en": "love this;so pretty;must try;saved for later;perfect for;look at this;my favorite;check out;"
          "amazing;obsessed with",
    "fr": "j'adore;trop joli;à essayer;pour plus tard;parfait pour;regardez;mon préféré;à découvrir;"
          "incroyable;fan de",
    "de": "liebe das;so schön;muss ich probieren;für später;perfekt für;schau mal;mein favorit;entdecke;"
          "toll;verliebt in",
    "es": "me encanta;qué bonito;hay que probar;para después;perfecto para;mira esto;mi favorito;descubre;"
          "increíble;obsesionada con",
}
#: Board titles are written the way people write them: a prefix, the interest, a suffix, an emoji.
BOARD_PREFIXES = ("my dream", "future", "my", "dream", "someday", "cute", "our", "the best")
BOARD_SUFFIXES = ("ideas", "inspo", "goals", "board", "stuff", "!!!", "<3", "for later", "vibes", "2026")
BOARD_EMOJI = ("😍", "✨", "💕", "🔥", "🏡", "🌿", "❤️", "🙌", "💫", "🌸")
#: Titles that say nothing about the interest (people do this too).
BOARD_GENERIC = ("favs", "random", "stuff i like", "pins", "misc", "to try", "for later", "aesthetic",
                 "✨✨", "my board")

#: Syllables for procedurally named brands (per world, seed-dependent).
BRAND_SYLLABLES = ("ko", "va", "lu", "men", "tri", "sol", "ka", "ra", "no", "vi", "ze", "ta", "mo", "ri",
                   "fel", "dan", "or", "ix", "bel", "ne")

#: Image vocabulary: a topic is drawn as one shape on one background colour (a unique pair per
#: topic) and a concept as the shapes' fill colour, so pixels determine topic and concept words.
SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross", "ring", "hexagon")
BACKGROUNDS = {"white": (245, 245, 240), "black": (20, 20, 24), "grey": (128, 128, 132),
               "beige": (222, 205, 170), "brown": (110, 70, 40)}
FILLS = {"red": (215, 35, 35), "orange": (240, 140, 20), "yellow": (245, 220, 40),
         "green": (40, 160, 60), "blue": (40, 90, 220), "purple": (140, 50, 170)}
COUNT_WORDS = ("one", "two", "three")

#: Entity attributes, one value of each kind per entity (see ``generate.py``). Each kind lists its
#: values per language in the same order (``;`` between values, ``|`` between synonyms); a topic uses
#: a few values of each kind (drawn per world). ``colour`` is the shapes' fill and ``pattern`` how
#: they are filled, so both are visible in the image; the other kinds are not.
ATTRIBUTE_KINDS = ("colour", "pattern", "material", "style", "occasion", "audience")
VISUAL_KINDS = ("colour", "pattern")
ATTRIBUTES: dict[str, dict[str, str]] = {
    "colour": {
        "en": "red;orange;yellow;green;blue;purple",
        "fr": "rouge;orange;jaune;vert;bleu;violet",
        "de": "rot;orange;gelb;grün;blau;lila",
        "es": "rojo;naranja;amarillo;verde;azul;morado",
    },
    "pattern": {
        "en": "plain|solid;striped;polka dot|dotted;checked|plaid",
        "fr": "uni;rayé;à pois;à carreaux",
        "de": "einfarbig;gestreift;gepunktet;kariert",
        "es": "liso;de rayas;de lunares;de cuadros",
    },
    "material": {
        "en": "wood|wooden;metal;glass;cotton;leather;ceramic;linen;marble",
        "fr": "bois;métal;verre;coton;cuir;céramique;lin;marbre",
        "de": "holz;metall;glas;baumwolle;leder;keramik;leinen;marmor",
        "es": "madera;metal;vidrio;algodón;cuero;cerámica;lino;mármol",
    },
    "style": {
        "en": "boho|bohemian;minimalist;rustic;scandinavian|scandi;industrial;glam;farmhouse;retro",
        "fr": "bohème;minimaliste;rustique;scandinave;industriel;glamour;champêtre;rétro",
        "de": "boho;minimalistisch;rustikal;skandinavisch;industriell;glamourös;landhaus;retro",
        "es": "bohemio;minimalista;rústico;escandinavo;industrial;glamuroso;campestre;retro",
    },
    "occasion": {
        "en": "everyday;party;holiday;date night;summer;winter;weekend;gift",
        "fr": "quotidien;fête;vacances;soirée en amoureux;été;hiver;week-end;cadeau",
        "de": "alltag;party;urlaub;date night;sommer;winter;wochenende;geschenk",
        "es": "diario;fiesta;vacaciones;cita romántica;verano;invierno;fin de semana;regalo",
    },
    "audience": {
        "en": "for women|womens;for men|mens;for kids|kids;for teens;for couples;for seniors",
        "fr": "pour femme;pour homme;pour enfants;pour ados;pour couples;pour seniors",
        "de": "für damen;für herren;für kinder;für teenager;für paare;für senioren",
        "es": "para mujer;para hombre;para niños;para adolescentes;para parejas;para mayores",
    },
}
#: Image vocabulary for patterns (the English head word of each ``pattern`` value, same order).
PATTERNS = ("plain", "striped", "polka dot", "checked")
#: A concept is drawn as the colour of the image's frame (concept index -> frame colour), so the
#: pixels show the concept too; these colours differ from every fill and background.
FRAMES = ((255, 105, 180), (0, 200, 210), (30, 40, 140), (120, 130, 20), (150, 20, 60), (0, 110, 100))
