"""CDI (Container Device Interface) specs for this host, one concept a module:

- ``devices``: the common plan and each GPU and MIG device, built per device;
- ``spec``: the spec rendered from nvhook.edits, and this host's spec (`cdi generate`);
- ``version``: the CDI version table, the minimum version, the validator;
- ``yamlemit``: the YAML writer; ``reader``: kind and names of spec files (`cdi list`);
- ``commands``: `cdi generate|list` parsing; ``refresh``: `cdi refresh [--watch]`.

The finish hook the specs run (`cdi finish`) is nvhook/finish.py. cli.py dispatches to
each module; nothing here imports this package's ``__init__`` for names.
"""
