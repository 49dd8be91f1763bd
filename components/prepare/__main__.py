import sys

from components.prepare.cli import main

sys.exit(main())
