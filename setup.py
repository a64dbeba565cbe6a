"""The role folders' templates and monitoring files ride in the wheel as
gourmetgram/roles/<role>/ (gourmetgram.host.render finds them there on a host); their
pyinfra task files stay on the controller."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROLES = ("nginx", "systemd", "prometheus", "grafana")


class BuildWithRoleFiles(build_py):
    def run(self):
        super().run()
        if self.editable_mode:
            return
        for role in ROLES:
            dest = Path(self.build_lib) / "gourmetgram" / "roles" / role
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(role, dest, ignore=shutil.ignore_patterns("*.py", "__pycache__"))


setup(cmdclass={"build_py": BuildWithRoleFiles})
