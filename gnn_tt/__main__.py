import sys

from gnn_tt.cli import main

sys.exit(main())
