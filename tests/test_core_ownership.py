"""Who may act on what on a shared server (core/ownership.py): people act on their own runs and
models, an admin and the command line on everything; owners are kept as ids that reveal nothing."""

from __future__ import annotations

import json

import pytest

from core.errors import WorkbenchError
from core.history import OTHERS_DATA, as_seen_by
from core.ownership import COMMAND_LINE, ModelOwners, Person, Visitors, refuse_unless_owner


def test_a_person_acts_on_their_own_things_only_and_an_admin_on_everything():
    ann, bob, teacher = Person("browser:ann"), Person("browser:bob"), Person("login:teacher", admin=True)
    assert ann.may_act_on(ann.id) and not ann.may_act_on(bob.id)
    assert not ann.may_act_on("") and not ann.may_act_on(None)  # a model nobody claimed: the admin's
    assert teacher.may_act_on(bob.id) and teacher.may_act_on(None)
    assert COMMAND_LINE.may_act_on(bob.id)
    with pytest.raises(WorkbenchError, match="The run of 'x' is someone else's: .* can cancel it"):
        refuse_unless_owner(ann, bob.id, "The run of 'x'", "cancel")
    assert "ann" not in ann.id and len(ann.id) == 16  # the key itself is never stored


def test_who_a_request_comes_from():
    visitors = Visitors()
    visitors.remember("page-1", "browser-key-A")
    shared = dict(shared=True, admins=frozenset({"teacher"}), by_login=False)
    # A page is its browser (so a reload, a new session, is still the same person)...
    assert visitors.person("page-1", None, **shared) == Person("browser:browser-key-A")
    visitors.remember("page-2", "browser-key-A")
    assert visitors.person("page-2", None, **shared).id == visitors.person("page-1", None, **shared).id
    # ...an API client its session; a shared class login is still each person's browser...
    assert visitors.person("api-1", None, **shared) == Person("session:api-1")
    assert visitors.person("page-1", "class", **shared) == Person("browser:browser-key-A")
    # ...personal logins are the person, and an admin login is unrestricted.
    assert visitors.person("page-1", "ann", shared=True, admins=frozenset(), by_login=True) == Person("login:ann")
    assert visitors.person("api-1", "teacher", **shared).admin
    # On a Space with sign-in, a signed-in person is their Hugging Face login on any browser; the
    # Space's owner acts on everything.
    anns_phone = visitors.person("page-3", None, **shared, hf_login="ann")
    assert anns_phone == visitors.person("page-1", None, **shared, hf_login="ann") == Person("hf:ann")
    assert visitors.person("page-1", None, **shared, hf_login="teacher", hf_admins=frozenset({"teacher"})).admin
    assert visitors.person("page-1", "teacher", **shared, hf_login="bob") == Person("login:teacher", admin=True)
    assert not visitors.person("page-1", None, **shared, hf_login="bob", hf_admins=frozenset({"teacher"})).admin
    # On a server nobody else reaches, everyone is its owner.
    assert visitors.person("api-1", None, shared=False, admins=frozenset(), by_login=False).unrestricted


def test_model_owners_follow_renames_and_deletions_and_are_written_whole(tmp_path):
    owners = ModelOwners(tmp_path)
    owners.claim("weather", "ann-id")
    owners.renamed("weather", "weather-2")
    assert owners.owner_of("weather") is None and owners.owner_of("weather-2") == "ann-id"
    owners.forget("weather-2")
    assert owners.owner_of("weather-2") is None
    assert json.loads((tmp_path / ".owners.json").read_text()) == {}
    assert [path.name for path in tmp_path.iterdir()] == [".owners.json"]  # no temporary left beside it


def test_others_see_a_run_without_its_file_name():
    ann, bob = Person("browser:ann"), Person("browser:bob")
    runs = [{"id": "1", "data": "ann-diary.txt", "owner": ann.id}]
    assert as_seen_by(runs, ann) == [{"id": "1", "data": "ann-diary.txt"}]
    assert as_seen_by(runs, bob) == [{"id": "1", "data": OTHERS_DATA}]
    assert as_seen_by(runs, COMMAND_LINE)[0]["data"] == "ann-diary.txt"
