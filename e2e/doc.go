// Package e2e holds end-to-end tests: they build the mesh binary, run it as
// real processes on 127.0.0.1 beside real backends, and check what a user
// would see. Every process a test starts is stopped by its PID when the
// test ends; every load loop is bounded in count and time.
package e2e
