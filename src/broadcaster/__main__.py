from broadcaster.cli import main

raise SystemExit(main())
