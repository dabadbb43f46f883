"""``python -m tinyalex.flags``: every TINYALEX_* variable, its meaning, default and value now."""

from . import table

if __name__ == "__main__":
    print(table())
