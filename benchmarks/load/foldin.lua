-- POST /recommendations with 20 ratings of popular movies of the bundled data
math.randomseed(42)
local movies = {1, 2, 6, 10, 32, 47, 50, 110, 150, 260, 296, 318, 356, 377, 380, 457, 480, 527,
                589, 590, 592, 593, 608, 780, 858, 1036, 1196, 1198, 1210, 2571, 2858, 2959, 4993}
request = function()
  local parts, used = {}, {}
  while #parts < 20 do
    local m = movies[math.random(#movies)]
    if not used[m] then
      used[m] = true
      parts[#parts + 1] = string.format('{"item_id": %d, "rating": %d}', m, math.random(1, 5))
    end
  end
  local body = '{"ratings": [' .. table.concat(parts, ",") .. '], "k": 10}'
  return wrk.format("POST", "/recommendations", {["Content-Type"] = "application/json"}, body)
end
