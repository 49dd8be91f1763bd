import sys

from components.serve.cli import collect_main, main

if sys.argv[1:2] == ["collect"]:
    sys.exit(collect_main(sys.argv[2:]))
sys.exit(main())
