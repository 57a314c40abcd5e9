"""Helpers shared by the tests: fakes, fault injection, stand-ins and harnesses. Test modules
import from here, never from one another; nothing here is collected as a test."""
