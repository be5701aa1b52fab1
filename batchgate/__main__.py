from batchgate.cli.main import main

main()
