"""`python -m tools.published [--readme] [--root DIR]`."""
import sys

from tools.published import main

sys.exit(main())
