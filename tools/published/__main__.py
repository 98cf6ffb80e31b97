"""`python -m memstudy.study.published [--readme] [--root DIR]`."""
import sys

from . import main

sys.exit(main())
