-- GET /users/{id}/recommendations for random users of the bundled data (ids 1..610)
math.randomseed(42)
request = function()
  return wrk.format("GET", "/users/" .. math.random(1, 610) .. "/recommendations?k=10")
end
