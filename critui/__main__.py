from critui.cli import main

main()
