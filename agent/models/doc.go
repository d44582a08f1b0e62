// Package models keeps the agent's loaded model versions and routes
// inference requests to their runtime sessions.
//
// The protocol front ends (agent/httpapi, agent/grpcapi) speak to a *Manager
// through small interfaces of their own and map its sentinel errors to status
// codes.
package models
