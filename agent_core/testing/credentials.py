"""The credentials of the test agents: :data:`KEY`, :data:`PASSWORD`, and
users hashed with :data:`TEST_SCRYPT`, cheap scrypt parameters
(:func:`add_user`): a login verifies with the parameters stored in the hash,
so the tests' logins cost microseconds, not ~65 ms each. Only the test
harness does this: ``pgwarden user`` and ``pgwarden setup`` hash with
:mod:`agent_core.auth`'s own parameters, and so does any test that calls
:meth:`~agent_core.auth.UsersFile.set`."""

from __future__ import annotations

from agent_core.auth import User, UsersFile, hash_password

PASSWORD = "correct horse battery staple"
KEY = "0123456789abcdef-test-key"
#: scrypt parameters of the users the fixtures write: about 2,000 times cheaper
#: than the agent's own (n=2**14, r=8), for tests only (see the module's docstring).
TEST_SCRYPT = {"n": 2**4, "r": 1, "p": 1}


def add_user(users: UsersFile, username: str, password: str, role: str = "admin") -> None:
    """Add or replace a user of ``users``, its password hashed with :data:`TEST_SCRYPT`."""
    current = users.load()
    current[username] = User(role, hash_password(password, **TEST_SCRYPT))
    users.save(current)
