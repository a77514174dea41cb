// Private per-object state keys, all in one place so they never collide with user properties.
export const kSession = Symbol('facade.session');
export const kTunnel = Symbol('facade.tunnel');
export const kAuthenticatedUser = Symbol('facade.authenticatedUser');
