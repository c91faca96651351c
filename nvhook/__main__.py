"""`python3 -m nvhook`: the same entry point as the installed launchers."""
import sys

from nvhook.cli import main

sys.exit(main())
