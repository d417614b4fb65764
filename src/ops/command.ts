/** What backup and restore say when the server runs on MongoDB, which they do not cover. */
export function mongoBackupHint(db: string): string {
  const dump = (collection: string): string => `  mongodump --uri "$MONGODB_URI" --db ${db} --collection ${collection} --gzip --archive=${collection}.gz`;
  return [
    'MONGODB_URI is set, and this command covers the embedded store only. On MongoDB, back up with',
    'mongodump, in this order (each one then covers everything the ones before it refer to):',
    ...['events', 'counters', 'blobs.files', 'blobs.chunks'].map(dump),
    'restore the four with mongorestore --gzip --archive=<file>, then rebuild the views: npm run replay',
    '(docs/operations.md, "Backup and restore on MongoDB").',
  ].join('\n');
}
