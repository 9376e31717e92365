from simulator.server import main

main()
