from fxp.cli import main

raise SystemExit(main())
