"""`python -m helpers --profile NAME`: run the course notebooks for a profile (helpers.course.pipeline)."""
import sys

from helpers.course.pipeline import main

if __name__ == "__main__":
    sys.exit(main())
