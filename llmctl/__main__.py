from llmctl.entry import main

main()
