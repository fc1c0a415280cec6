"""The Ansible adapter: the only package that runs Ansible or imports ansible_runner.

``inventory`` reads an inventory the way Ansible does (any format it accepts) into plain groups
and host names; the playbook runner joins it with the issues that execute plans.
"""
