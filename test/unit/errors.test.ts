import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Errors, FacadeError, facadeError, isFacadeError } from '../../src/core/errors.js';

test('every error code is unique and carries the FACADE_ERR_ prefix', () => {
  const codes = Object.values(Errors).map((e) => e.code);
  assert.equal(new Set(codes).size, codes.length);
  for (const code of codes) assert.match(code, /^FACADE_ERR_[A-Z0-9_]+$/);
});

test('facadeError fills the message template and keeps the code', () => {
  const err = facadeError('FRAME_TOO_LARGE', [70000, 65545]);
  assert.ok(err instanceof FacadeError);
  assert.equal(err.code, 'FACADE_ERR_FRAME_TOO_LARGE');
  assert.match(err.message, /70000 bytes exceeds the limit of 65545/);
  assert.ok(isFacadeError(err, 'FRAME_TOO_LARGE'));
  assert.ok(!isFacadeError(err, 'FRAME_TYPE'));
});
