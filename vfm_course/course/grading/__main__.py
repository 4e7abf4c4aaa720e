from .grader import main

main()
