from fashionlab.cli import main

raise SystemExit(main())
