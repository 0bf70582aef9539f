import sys

from tinyqmoe.cli import main

sys.exit(main())
