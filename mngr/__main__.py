from mngr.entry import main

main()
