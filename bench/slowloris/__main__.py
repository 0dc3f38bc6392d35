from bench.slowloris.cli import main

raise SystemExit(main())
