-- Argo CD health check for everynode.dev/DaemonSet, from the controller's conditions:
-- Progressing until the controller has observed the set's generation, then Degraded once
-- the rollout is stalled (failed, aborted, or its template refused), Suspended while
-- paused or frozen, Healthy once Ready (every desired node runs an available pod of the
-- update revision), Progressing otherwise. Uses only Lua's base library: Argo CD opens no
-- string library for a check from argocd-cm.
local hs = {}

local function find(conditions, wanted)
  for _, c in ipairs(conditions or {}) do
    if c.type == wanted then
      return c
    end
  end
  return nil
end

local function is_true(c)
  return c ~= nil and c.status == "True"
end

-- "Reason: message" of condition c (either alone when the other is empty), else default.
local function say(c, default)
  local reason, message = (c and c.reason) or "", (c and c.message) or ""
  if reason ~= "" and message ~= "" then
    return reason .. ": " .. message
  elseif reason .. message ~= "" then
    return reason .. message
  end
  return default
end

local status = obj.status or {}
local generation = obj.metadata.generation
if status.observedGeneration == nil
    or (generation ~= nil and status.observedGeneration ~= generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the everynode controller to observe generation " .. tostring(generation)
  return hs
end

local conditions = status.conditions
local ready = find(conditions, "Ready")
local stalled = find(conditions, "Stalled")
local failed = find(conditions, "RolloutFailed")
if is_true(stalled) then
  hs.status = "Degraded"
  hs.message = say(stalled, "Rollout stalled")
elseif is_true(failed) and not is_true(ready) then
  hs.status = "Degraded"
  hs.message = say(failed, "Rollout failed")
elseif is_true(find(conditions, "RolloutFrozen")) then
  hs.status = "Suspended"
  hs.message = "Set frozen (spec.frozen): no pod is changed"
elseif is_true(find(conditions, "RolloutPaused")) then
  hs.status = "Suspended"
  hs.message = "Rollout paused (spec.paused)"
elseif is_true(ready) then
  hs.status = "Healthy"
  hs.message = say(ready, "Rollout complete")
else
  hs.status = "Progressing"
  hs.message = say(ready or find(conditions, "Progressing"), "Waiting for the rollout")
end
return hs
