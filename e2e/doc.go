// Package e2e holds end-to-end scenarios that run the product's own
// services (supernode.Run, personal.Run from their JSON configs) as
// processes in the network namespaces of internal/testing/nattest, and drive them
// from a user's client the way a browser would. It has no code of its own
// outside its tests.
package e2e
