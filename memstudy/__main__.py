from memstudy.cli import main

raise SystemExit(main())
