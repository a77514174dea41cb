// A real browser (Debian's headless Chromium, driven by playwright-core) loads the decoy home page over HTTPS:
// it must negotiate h2, render the page with its stylesheet, and leave a screenshot in test-artifacts/.

import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { chromium } from 'playwright-core';
import { createSiteApp, SITE_DEFAULT_DIR } from '../../src/front/site.js';
import { makeTestCertificate } from '../helpers/tls-fixture.js';

const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--ignore-certificate-errors',
];

/** test-artifacts/ at the repository root (the folder holding public/), from src or dist alike. */
const ARTIFACT_DIR = path.join(path.dirname(SITE_DEFAULT_DIR), 'test-artifacts');

const skipReason = !existsSync(CHROMIUM) ? `${CHROMIUM} is missing (apt-get install chromium)` : false;

test('headless Chromium renders the decoy home page over h2', {
  skip: skipReason,
  timeout: 60_000,
}, async (t) => {
  const workDir = mkdtempSync(path.join(os.tmpdir(), 'facade-browser-'));
  t.after(() => rmSync(workDir, { recursive: true, force: true }));
  const { cert, key } = await makeTestCertificate(workDir, ['localhost', '127.0.0.1']);

  const app = createSiteApp({
    siteDir: SITE_DEFAULT_DIR,
    tls: { key, cert },
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const port = (app.server.address() as AddressInfo).port;

  const browser = await chromium
    .launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS })
    .catch(async (err) => {
      await app.close();
      throw err;
    });
  // The browser first, so its h2 session is gone when the server closes.
  t.after(async () => {
    await browser.close();
    await app.close();
  });
  // A fresh, empty profile: nothing cached, no HSTS state from earlier runs.
  const context = await browser.newContext({
    viewport: { width: 1280, height: 900 },
    ignoreHTTPSErrors: true,
  });
  const page = await context.newPage();
  const failedRequests: string[] = [];
  page.on('requestfailed', (request) => failedRequests.push(request.url()));
  const cspViolations: string[] = [];
  page.on('console', (message) => {
    if (/Content Security Policy/i.test(message.text())) cspViolations.push(message.text());
  });

  const response = await page.goto(`https://127.0.0.1:${port}/`, { waitUntil: 'load' });
  assert.ok(response, 'navigation produced a response');
  assert.equal(response.status(), 200);
  const headers = await response.allHeaders();
  assert.equal(headers['strict-transport-security'], 'max-age=31536000');

  // Page-side code is passed as strings: this project compiles without the DOM library.
  const nextHopProtocol = await page.evaluate<string>(
    "performance.getEntriesByType('navigation')[0].nextHopProtocol",
  );
  assert.equal(nextHopProtocol, 'h2', 'the browser negotiated HTTP/2 by ALPN');

  assert.match(await page.title(), /Copperleaf Studio/);
  const heading = await page.textContent('h1');
  assert.ok(heading && heading.trim().length > 0, 'the page has a visible heading');

  // The stylesheet applied: the body background and the card styling come only from css/site.css.
  const bodyBackground = await page.evaluate<string>('getComputedStyle(document.body).backgroundColor');
  assert.equal(bodyBackground, 'rgb(251, 246, 240)');
  const buttonRadius = await page.evaluate<string>(
    "getComputedStyle(document.querySelector('.button')).borderRadius",
  );
  assert.equal(buttonRadius, '999px');
  // Images decoded (SVG hero and logo), i.e. the CSP and the content types let them through.
  const imagesLoaded = await page.evaluate<boolean>(
    'document.images.length > 0 && Array.from(document.images).every((i) => i.complete && i.naturalWidth > 0)',
  );
  assert.ok(imagesLoaded, 'all images loaded');
  assert.deepEqual(failedRequests, []);
  assert.deepEqual(cspViolations, []);

  mkdirSync(ARTIFACT_DIR, { recursive: true });
  const screenshot = path.join(ARTIFACT_DIR, 'decoy-home.png');
  await page.screenshot({ path: screenshot, fullPage: true });
  assert.ok(statSync(screenshot).size > 10_000, 'screenshot written');

  // The 404 page renders with the same style, under its real status.
  const missing = await page.goto(`https://127.0.0.1:${port}/no-such-page`, { waitUntil: 'load' });
  assert.equal(missing?.status(), 404);
  assert.match(await page.title(), /not found/i);
  await page.screenshot({ path: path.join(ARTIFACT_DIR, 'decoy-404.png') });
});
