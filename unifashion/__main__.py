from unifashion.cli import main

raise SystemExit(main())
