"""importers: turn external data sets into workspaces (``omni import ...``)."""
