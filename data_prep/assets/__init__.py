"""Files shipped inside the package (see README.md here for their provenance)."""
from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent
ASTRONAUT_JPG = ASSETS_DIR / "astronaut.jpg"
