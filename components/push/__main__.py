import sys

from components.push.cli import main

sys.exit(main())
