// `npm run docs:settings`: rewrites the README's settings tables from the definitions.

import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { renderSettingsMarkdown, replaceSettingsBlock } from './settings-markdown.js';

// Compiled to dist/src/config/: the README is three levels up.
const readmePath = fileURLToPath(new URL('../../../README.md', import.meta.url));
writeFileSync(readmePath, replaceSettingsBlock(readFileSync(readmePath, 'utf8'), renderSettingsMarkdown()));
