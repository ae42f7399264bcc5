from textae.cli import main

main()
