"""Pure mappings from what a source sends to IOC events: no I/O, no broker, no settings.

Every way a record arrives calls the same function (the poller in `connectors/<name>.py`, the
push receivers in `ioc/api/`, `ioc import`), so one record state is one event, with one id,
whichever way it came.
"""
