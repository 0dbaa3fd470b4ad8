"""The version string, apart so that reading it imports nothing else.

``skocc --version`` and :mod:`skocc._persistence` read it from here; the
package re-exports it.
"""

__version__ = "0.1.0.dev0"
