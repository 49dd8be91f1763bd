import sys

from components.serve.cli import main

sys.exit(main())
