import sys

from components.validate.cli import main

sys.exit(main())
