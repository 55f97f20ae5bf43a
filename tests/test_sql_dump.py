"""InterCode-SQL's MySQL dump -> parsed tables, DESCRIBE rows and cached read-only SQLite files."""

import csv
import importlib.util
import json
import sqlite3

import pytest

from ipr_lightning.envs.intercode_sql.dump import (
    Column,
    connect_sqlite,
    default_dump_path,
    describe_rows,
    mysql_ci_key,
    parse_dump,
    sqlite_databases,
)

DUMP = r"""-- TEST USER
CREATE USER 'admin'@'%' IDENTIFIED BY 'admin';
GRANT ALL PRIVILEGES ON *.* TO 'admin'@'%';
FLUSH PRIVILEGES;

CREATE DATABASE  IF NOT EXISTS `shop` /*!40100 DEFAULT CHARACTER SET utf8mb4 */;
USE `shop`;
/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;
/*!40101 SET NAMES utf8 */;
DROP TABLE IF EXISTS `people`;
CREATE TABLE `people` (
  `id` int NOT NULL AUTO_INCREMENT,
  `name` varchar(40) COLLATE utf8mb4_general_ci DEFAULT NULL,
  `note` text COLLATE utf8mb4_general_ci,
  `balance` decimal(10,2) NOT NULL DEFAULT '0.00',
  `seen` datetime DEFAULT NULL,
  PRIMARY KEY (`id`)
) ENGINE=InnoDB AUTO_INCREMENT=5 DEFAULT CHARSET=utf8mb4;
LOCK TABLES `people` WRITE;
/*!40000 ALTER TABLE `people` DISABLE KEYS */;
INSERT INTO `people` VALUES (1,'alice','it\'s \"quoted\"',5.00,'2010-01-01 00:00:00'),
  (2,'Bob','back\\slash; tab\there\nnew',-3.5,NULL);
INSERT INTO `people` VALUES (3,'O''Brien','semi;colon -- not a comment',1e2,NULL);
/*!40000 ALTER TABLE `people` ENABLE KEYS */;
UNLOCK TABLES;
CREATE TABLE `orders` (
  `person_id` int NOT NULL,
  `item` char(3) COLLATE utf8mb4_general_ci NOT NULL DEFAULT '',
  `qty` int DEFAULT '1',
  `code` varchar(20) DEFAULT NULL,
  `made` timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP,
  PRIMARY KEY (`person_id`,`item`),
  UNIQUE KEY `code_u` (`code`),
  KEY `orders_k` (`qty`,`made`),
  CONSTRAINT `orders_FK_1` FOREIGN KEY (`person_id`) REFERENCES `people` (`id`)
) ENGINE=InnoDB;
INSERT INTO `orders` VALUES (1,'abc',-2,NULL,'2020-05-06 07:08:09');

CREATE DATABASE IF NOT EXISTS `Zoo`;
USE `Zoo`;
CREATE TABLE `Animal` (`name` text NOT NULL, `legs` float(4,1), PRIMARY KEY (`name`(255)),
  CONSTRAINT `a_fk` FOREIGN KEY (`legs`) REFERENCES `Legs` (`n`) ON DELETE CASCADE);
INSERT INTO `Animal` VALUES ('\0\Z',4),('"',0.5),
  ('say ""hi""',-1),("a""b 'c' \%",NULL);
-- Dump completed
"""


def test_parse_dump_reads_tables_rows_and_keys():
    dbs = parse_dump(DUMP)
    assert list(dbs) == ["shop", "Zoo"]
    people, orders = dbs["shop"]
    assert people.name == "people" and people.primary_key == ["id"] and people.keys == set()
    assert people.columns == [
        Column("id", "int", False, None, "auto_increment"),
        Column("name", "varchar(40)", True, None, ""),
        Column("note", "text", True, None, ""),
        Column("balance", "decimal(10,2)", False, "0.00", ""),
        Column("seen", "datetime", True, None, ""),
    ]
    assert people.rows == [
        (1, "alice", 'it\'s "quoted"', 5.0, "2010-01-01 00:00:00"),
        (2, "Bob", "back\\slash; tab\there\nnew", -3.5, None),
        (3, "O'Brien", "semi;colon -- not a comment", 100.0, None),
    ]
    assert isinstance(people.rows[0][3], float) and isinstance(people.rows[0][0], int)
    assert orders.primary_key == ["person_id", "item"]
    assert orders.keys == {"code", "qty", "person_id"}
    assert orders.columns[1] == Column("item", "char(3)", False, "", "")
    assert orders.columns[4].default == "CURRENT_TIMESTAMP"
    assert orders.rows == [(1, "abc", -2, None, "2020-05-06 07:08:09")]
    (animal,) = dbs["Zoo"]
    assert animal.primary_key == ["name"] and animal.keys == {"legs"}
    assert animal.columns[1] == Column("legs", "float(4,1)", True, None, "")
    assert animal.rows == [
        ("\0\x1a", 4),
        ('"', 0.5),
        ('say ""hi""', -1),
        ("a\"b 'c' \\%", None),
    ]


def test_describe_rows_are_mariadbs():
    people, orders = parse_dump(DUMP)["shop"]
    assert describe_rows(people) == [
        ("id", "int(11)", "NO", "PRI", None, "auto_increment"),
        ("name", "varchar(40)", "YES", "", None, ""),
        ("note", "text", "YES", "", None, ""),
        ("balance", "decimal(10,2)", "NO", "", "0.00", ""),
        ("seen", "datetime", "YES", "", None, ""),
    ]
    assert describe_rows(orders) == [
        ("person_id", "int(11)", "NO", "PRI", None, ""),
        ("item", "char(3)", "NO", "PRI", "", ""),
        ("qty", "int(11)", "YES", "MUL", "1", ""),
        ("code", "varchar(20)", "YES", "UNI", None, ""),
        ("made", "timestamp", "NO", "", "current_timestamp()", ""),
    ]
    (animal,) = parse_dump(DUMP)["Zoo"]
    assert describe_rows(animal) == [
        ("name", "text", "NO", "PRI", None, ""),
        ("legs", "float(4,1)", "YES", "MUL", None, ""),
    ]


@pytest.mark.parametrize(
    ("bad", "line"),
    [
        ("USE `shop`;\nCREATE TABLE `t` (`a` int);\nINSERT INTO `t` VALUES (1,2);\n", 3),
        ("USE `shop`;\n\nCREATE TABLE `t` (`a` int WHATEVER);\n", 3),
        ("USE `shop`;\nCREATE TABLE `t` (`a` int);\nINSERT INTO `t` VALUES (now());\n", 3),
        ("USE `shop`;\nUPDATE `t` SET a = 1;\n", 2),
        ("-- x\nCREATE TABLE `t` (`a` int);\n", 2),
        ("USE `shop`;\nINSERT INTO `t` VALUES ('open\n);\n", 2),
    ],
)
def test_unparsable_statement_names_source_and_line(bad, line):
    with pytest.raises(ValueError, match=rf"^dump\.sql:{line}: ") as err:
        parse_dump(bad, source="dump.sql")
    assert "\n" not in str(err.value)


def test_sqlite_databases_builds_once_read_only_and_case_insensitive(tmp_path):
    dump = tmp_path / "dump.sql"
    dump.write_text(DUMP)
    out = sqlite_databases(dump, tmp_path / "cache")
    assert out.parent == tmp_path / "cache" and out.name.startswith("sqlite-")
    assert sorted(p.name for p in out.iterdir()) == [
        "COMPLETE",
        "Zoo.sqlite",
        "schema.json",
        "shop.sqlite",
    ]
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temp folder left
    schema = json.loads((out / "schema.json").read_text())
    assert list(schema) == ["shop", "Zoo"] and list(schema["shop"]) == ["people", "orders"]
    assert schema["shop"]["orders"][3] == ["code", "varchar(20)", "YES", "UNI", None, ""]

    con = connect_sqlite(f"file:{out / 'shop.sqlite'}?mode=ro", uri=True)
    assert con.execute("SELECT name FROM people WHERE name = 'ALICE'").fetchall() == [("alice",)]
    # utf8mb4_general_ci with PAD SPACE: trailing spaces and accents do not count
    assert con.execute("SELECT name FROM people WHERE name = '\u00e1lice  '").fetchall() == [
        ("alice",)
    ]
    assert con.execute("SELECT count(DISTINCT name) FROM people WHERE name = 'BOB'").fetchone() == (
        1,
    )
    assert con.execute("SELECT DISTINCT lower(name) FROM people ORDER BY name").fetchall() == [
        ("alice",),
        ("bob",),
        ("o'brien",),
    ]
    assert con.execute("SELECT balance, seen FROM people WHERE id = 1").fetchone() == (
        5.0,
        "2010-01-01 00:00:00",
    )
    assert type(con.execute("SELECT balance FROM people WHERE id = 1").fetchone()[0]) is float
    assert con.execute("SELECT item FROM orders WHERE ITEM = 'ABC'").fetchall() == [("abc",)]
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        con.execute("DELETE FROM people")
    con.close()

    marker = (out / "COMPLETE").stat()
    dump.touch()  # same content, new mtime: still the same cache entry
    assert sqlite_databases(dump, tmp_path / "cache") == out
    again = (out / "COMPLETE").stat()
    assert (again.st_ino, again.st_mtime_ns) == (marker.st_ino, marker.st_mtime_ns)

    dump.write_text(DUMP.replace("'alice'", "'carol'"))  # new content: a new folder
    assert sqlite_databases(dump, tmp_path / "cache") != out


def test_failed_build_leaves_nothing_behind(tmp_path):
    dump = tmp_path / "dump.sql"
    dump.write_text(DUMP.replace("(3,'O''Brien'", "(1,'O''Brien'"))  # duplicate primary key
    with pytest.raises(sqlite3.IntegrityError):
        sqlite_databases(dump, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_rival_build_that_finishes_first_is_used(tmp_path, monkeypatch):
    import ipr_lightning.envs.intercode_sql.dump as sql_dump

    dump = tmp_path / "dump.sql"
    dump.write_text(DUMP)
    real_replace = sql_dump.os.replace
    rival = {}

    def replace_after_rival(src, dst):
        monkeypatch.setattr(sql_dump.os, "replace", real_replace)
        rival["out"] = sqlite_databases(dump, tmp_path / "cache")  # the other process wins
        rival["marker"] = (rival["out"] / "COMPLETE").stat().st_ino
        real_replace(src, dst)

    monkeypatch.setattr(sql_dump.os, "replace", replace_after_rival)
    out = sqlite_databases(dump, tmp_path / "cache")
    assert out == rival["out"] and (out / "COMPLETE").stat().st_ino == rival["marker"]
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]
    con = connect_sqlite(f"file:{out / 'Zoo.sqlite'}?mode=ro", uri=True)
    assert con.execute('SELECT legs FROM "Animal"').fetchall() == [(4.0,), (0.5,), (-1.0,), (None,)]


@pytest.fixture(scope="module")
def intercode_dump():
    if importlib.util.find_spec("intercode") is None:
        pytest.skip("intercode-bench not installed (pip install --no-deps intercode-bench==0.1.22)")
    return default_dump_path()


def test_real_dump_converts_completely(intercode_dump, tmp_path):
    dbs = parse_dump(intercode_dump.read_text(encoding="utf-8"), str(intercode_dump))
    assert len(dbs) == 20 and sum(len(tables) for tables in dbs.values()) == 81
    assert "admin" not in dbs and "pets_1" in dbs
    out = sqlite_databases(intercode_dump, tmp_path)
    schema = json.loads((out / "schema.json").read_text())
    for db, tables in dbs.items():
        con = connect_sqlite(f"file:{out / (db + '.sqlite')}?mode=ro", uri=True)
        assert list(schema[db]) == [t.name for t in tables]
        for table in tables:
            count = con.execute(f'SELECT count(*) FROM "{table.name}"').fetchone()[0]
            assert count == len(table.rows), (db, table.name)
        con.close()
    singer = {t.name: t for t in dbs["singer"]}["singer"]
    assert describe_rows(singer)[0] == ("Singer_ID", "int(11)", "NO", "PRI", None, "auto_increment")

    gold = list(csv.DictReader((intercode_dump.parent / "sql_queries.csv").open(encoding="utf-8")))
    assert len(gold) == 23
    for row in gold:
        con = connect_sqlite(f"file:{out / (row['db'] + '.sqlite')}?mode=ro", uri=True)
        con.execute(row["gold"]).fetchall()  # runs without error
        con.close()


def test_collation_cache_is_bounded_and_keys_agree():
    """#16: sorting 300 strings of 1 MB left 590 MB in the collation's cache."""
    from ipr_lightning.envs.intercode_sql import dump as sql_dump

    sql_dump._cached_key.cache_clear()
    long_text = "É" * (sql_dump.CACHED_KEY_CHARS + 1)
    assert mysql_ci_key(long_text) == "e" * (sql_dump.CACHED_KEY_CHARS + 1)
    assert sql_dump._cached_key.cache_info().currsize == 0
    assert mysql_ci_key("Café  ") == mysql_ci_key("CAFE") == "cafe"
    assert sql_dump._cached_key.cache_info().currsize == 2
    assert sql_dump._cached_key.cache_info().maxsize * sql_dump.CACHED_KEY_CHARS < 10 << 20
