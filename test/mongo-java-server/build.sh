#!/usr/bin/env bash
# Builds the mongo-java-server test launcher: fetches jars from Maven Central into target/lib
# (skipped when already present), then compiles the launcher into target/classes. Safe to re-run.
set -euo pipefail

DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LIB="$DIR/target/lib"
CLASSES="$DIR/target/classes"

for tool in java javac mvn; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "build.sh: '$tool' not found on PATH; install a JDK (17+) and Maven (3.8+)." >&2
    exit 1
  fi
done

if compgen -G "$LIB/mongo-java-server-core-*.jar" >/dev/null; then
  echo "build.sh: jars already in $LIB, skipping Maven"
else
  echo "build.sh: mvn copy-dependencies -> $LIB"
  mvn -B -q -f "$DIR/pom.xml" \
    org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
    -DoutputDirectory="$LIB"
fi

SRC="$DIR/MongoJavaServerLauncher.java"
OUT="$CLASSES/MongoJavaServerLauncher.class"
if [[ -f "$OUT" && "$OUT" -nt "$SRC" ]]; then
  echo "build.sh: $OUT is up to date, skipping javac"
else
  echo "build.sh: javac MongoJavaServerLauncher.java -> $CLASSES"
  mkdir -p "$CLASSES"
  javac -cp "$LIB/*" -d "$CLASSES" "$SRC"
fi
echo "build.sh: done"
