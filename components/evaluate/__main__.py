import sys

from components.evaluate.cli import main

sys.exit(main())
