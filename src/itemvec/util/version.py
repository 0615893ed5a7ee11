"""The package version, low enough that every layer may stamp it into what it writes."""

VERSION = "0.1.0"
