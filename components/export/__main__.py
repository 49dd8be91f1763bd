import sys

from components.export.cli import main

sys.exit(main())
