from workers.simulator.server import main

main()
