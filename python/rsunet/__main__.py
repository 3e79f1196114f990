from rsunet.cli import main

raise SystemExit(main())
