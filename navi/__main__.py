import sys

from navi.cli import main

sys.exit(main())
