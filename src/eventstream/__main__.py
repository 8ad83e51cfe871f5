from eventstream.cli import main

main()
