from autoprune.cli import main

main()
