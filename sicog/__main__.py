import sys

from sicog.cli import main

sys.exit(main())
